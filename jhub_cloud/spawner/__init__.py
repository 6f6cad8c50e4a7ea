"""CloudSpawner: the profile a user's groups allow decides the backend, and the maintained spawner
for it runs the server.

Layout (find each part here):

- ``target.py``      who a server is for (user, safe name, server name, groups): pure.
- ``builders/``      pure translators, one module per backend: (Resources, SpawnTarget, the
                     backend's section of the suite config, command, environment) -> the child
                     spawner's trait settings. Tested without any service.
- ``mountspec.py``   the sts-wire mount spec of a server, from the profile's mounts and the
                     site's `storage` section: pure.
- ``backends/``      thin adapters: the child spawner classes (subclasses of LocalProcessSpawner,
                     DockerSpawner, SlurmSpawner, KubeSpawner with small overrides).
- ``cloud.py``       CloudSpawner itself: the spawn form, the server-side check (policy.decide),
                     per-user limits, and start/poll/stop/progress/state passed to the child.
"""
