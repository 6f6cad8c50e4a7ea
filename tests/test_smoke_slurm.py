"""Slurm testbed: a job submitted by a test user runs as that user and completes."""

import shutil


def test_job_runs_as_submitting_user(slurm, run_dir):
    work = run_dir / "slurm-smoke-alice"
    work.mkdir()
    shutil.chown(work, "alice", "alice")
    job = slurm.run("sbatch", "--parsable", f"--partition={slurm.partition}", "--cpus-per-task=1",
                    "--mem=100M", f"--chdir={work}", f"--output={work}/%j.out",
                    "--wrap", "id -un; echo SLURM_JOB_USER=$SLURM_JOB_USER", user="alice")
    job_id = job.stdout.strip().split(";")[0]
    assert slurm.wait_job(job_id, timeout=60) == "COMPLETED"
    out = (work / f"{job_id}.out").read_text().split()
    assert out == ["alice", "SLURM_JOB_USER=alice"]


def test_impossible_job_is_refused_at_submission(slurm):
    # EnforcePartLimits=ALL: a job the node can never run must fail now, not pend forever.
    r = slurm.run("sbatch", "--cpus-per-task=4096", "--wrap", "true", user="bob", check=False)
    assert r.returncode != 0
    assert slurm.run("squeue", "-h", "-u", "bob").stdout.strip() == ""


def test_gpu_gres_is_scheduled_and_seen_by_the_job(slurm, run_dir):
    work = run_dir / "slurm-smoke-gpu"
    work.mkdir()
    shutil.chown(work, "alice", "alice")
    gres = f"gpu:{slurm.gpu_type}:1"
    job = slurm.run("sbatch", "--parsable", "--cpus-per-task=1", "--mem=100M", f"--gres={gres}",
                    f"--chdir={work}", f"--output={work}/%j.out",
                    "--wrap", "echo GPUS_ON_NODE=$SLURM_GPUS_ON_NODE CUDA=$CUDA_VISIBLE_DEVICES; "
                              "scontrol show job $SLURM_JOB_ID",
                    user="alice")
    job_id = job.stdout.strip().split(";")[0]
    assert slurm.wait_job(job_id, timeout=60) == "COMPLETED"
    out = (work / f"{job_id}.out").read_text()
    assert "GPUS_ON_NODE=1 CUDA=0" in out.splitlines()
    assert f"TresPerNode=gres:gpu:{slurm.gpu_type}:1" in out.split(), out


def test_more_gpus_than_the_node_has_are_refused(slurm):
    r = slurm.run("sbatch", f"--gres=gpu:{slurm.gpu_count + 1}", "--wrap", "true", user="bob", check=False)
    assert r.returncode != 0
    assert slurm.run("squeue", "-h", "-u", "bob").stdout.strip() == ""
