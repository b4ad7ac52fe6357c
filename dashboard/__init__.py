"""The web dashboard at ``/dashboard``: server-rendered pages over the same services the
API answers with (``router.install`` mounts it on the app)."""
