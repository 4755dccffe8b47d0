"""The layer the app (``lib``, ``main``) and the CLI (``mri_label``) share: modules that import neither the app nor
any ``mri_label`` module outside this package (``tests/unit/test_layers.py`` checks it)."""
