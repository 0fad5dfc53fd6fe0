"""Fixtures shared by the tests.

Unit tests drive protocols with StringTransport and task.Clock.  Integration
tests run the real ``spore``/``twist`` executables on 127.0.0.1, with ports
chosen by the OS, every wait bounded, and every process stopped at the end.
"""

from __future__ import annotations

import pytest

from tests.certs import PKI, make_pki
from tests.processes import Processes
from tests.services import Service, echo


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config) -> None:
    """Run the tests on the reactor ``spore`` runs on (pytest-twisted then finds it installed)."""
    from spore import reactor as spore_reactor

    if spore_reactor.available():
        spore_reactor.install()


@pytest.fixture
def reactor():
    """The global reactor, which pytest-twisted runs (it has no fixture of its own)."""
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def processes():
    """Starts spore/twist processes and makes sure none outlives the test."""
    running = Processes()
    yield running
    running.stop_all()


@pytest.fixture
def echo_service():
    """A local echo service on 127.0.0.1."""
    service = Service(echo)
    yield service
    service.close()


@pytest.fixture
def start_service():
    """Starts local services with a given handler; closes them all at the end."""
    started: list[Service] = []

    def start(handler, port: int = 0) -> Service:
        service = Service(handler, port=port)
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    """A test CA with server and client certificates, made once per run (tests/certs.py)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
