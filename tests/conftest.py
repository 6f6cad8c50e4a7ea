"""Session fixtures for the real services live in tests/testbed/ (one module per service)."""

pytest_plugins = [
    "tests.testbed.fixtures",
    "tests.testbed.slurm",
    "tests.testbed.sshd",
    "tests.testbed.docker",
    "tests.testbed.images",
    "tests.testbed.proxy",
    "tests.testbed.browser",
    "tests.testbed.seaweedfs",
    "tests.testbed.ceph",
    "tests.testbed.reliability",
]
