#!/bin/sh
# jhub-cloud's gate on the login node: the force-command of every certificate the hub signs for
# a Slurm command. It runs the command the hub asked for ($SSH_ORIGINAL_COMMAND) only when it
# is exactly one of those the Slurm backend sends, compared as text and never evaluated by
# a shell; anything else is refused with exit status 126.
#   sbatch --parsable                   (the job script on stdin)
#   squeue -h -j <job id> -o '%T %B %r'
#   squeue -h -t all -j <job id> -o '%T %B %r'   (a job that has ended: why, for its user)
#   scancel <job id>                    (<job id>: digits only)
# Install it on the login node as /usr/local/libexec/jhub-cloud-slurm-gate (mode 755, owned by
# root) or at the path set in backends.slurm.login_host.gate.
set -f
cmd=${SSH_ORIGINAL_COMMAND-}
QUERY_FORMAT="'%T %B %r'"

job_id() {  # digits only, nothing else (no sign, no space, no newline)
    case $1 in
        '' | *[!0-9]*) return 1 ;;
    esac
}

case $cmd in
    "sbatch --parsable")
        exec sbatch --parsable ;;
    "squeue -h -j "*)
        id=${cmd#"squeue -h -j "}
        id=${id%" -o $QUERY_FORMAT"}
        if job_id "$id" && [ "$cmd" = "squeue -h -j $id -o $QUERY_FORMAT" ]; then
            exec squeue -h -j "$id" -o '%T %B %r'
        fi ;;
    "squeue -h -t all -j "*)
        id=${cmd#"squeue -h -t all -j "}
        id=${id%" -o $QUERY_FORMAT"}
        if job_id "$id" && [ "$cmd" = "squeue -h -t all -j $id -o $QUERY_FORMAT" ]; then
            exec squeue -h -t all -j "$id" -o '%T %B %r'
        fi ;;
    "scancel "*)
        id=${cmd#"scancel "}
        if job_id "$id"; then
            exec scancel "$id"
        fi ;;
esac
printf 'jhub-cloud-slurm-gate: refused %s: this certificate allows only "sbatch --parsable", ' \
    "$(printf '%s' "$cmd" | head -c 200 | tr -c '[:print:]' '?')" >&2
printf '"squeue -h -j <job id> -o %s" and "scancel <job id>"\n' "$QUERY_FORMAT" >&2
exit 126
