"""Fixtures for the fakes' own tests: the fake Modal server (FLEET_HOME isolation comes
from the suite's root conftest)."""

from tests.fakes.modal.fixtures import *  # noqa: F401,F403
