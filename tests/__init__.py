"""The test suite: ``unit/`` (mirrors the packages; no server process), ``integration/`` (a real server process,
or Orthanc), ``helpers/`` (what both import). A regular package, so that ``tests.helpers`` is this folder's and
not the ``tests`` folder that MONAI Label installs into site-packages."""
