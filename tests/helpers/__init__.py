"""Modules the tests import (a live server, a fake Keycloak realm, Orthanc, the app's folders) and scripts they
launch; none of them holds tests."""
