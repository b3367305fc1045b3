"""A mutex kept in the MLflow registry itself, so registry changes serialise across machines."""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from loopline.core.errors import LooplineError

logger = logging.getLogger(__name__)


class RegistryError(LooplineError):
    """A registry operation cannot be done (no champion, unknown version, busy lock...)."""


def actor() -> str:
    """Who is acting: `LOOPLINE_ACTOR`, else the system user."""
    try:
        return os.environ.get("LOOPLINE_ACTOR") or getpass.getuser()
    except OSError:  # pragma: no cover - no user database in some containers
        return "unknown"


class RegistryLock:
    """A mutex kept in the MLflow registry: a registered model named `<model>.lock`.

    Creating a registered model is atomic in MLflow's store (the name is its primary key,
    a second create fails with RESOURCE_ALREADY_EXISTS), so the lock works for every
    process that reaches the same tracking server, on any machine. The holder deletes it
    when done. A holder that died leaves it behind: after `lease_s` its lease has expired
    and the next waiter removes it (checking, just before, that it is still the same one).
    The lease must outlast the longest hold (a few MLflow calls), by far.
    """

    OWNER, TOKEN, EXPIRES = "loopline.lock.owner", "loopline.lock.token", "loopline.lock.expires"

    def __init__(
        self, client: MlflowClient, model_name: str, wait_s: float, lease_s: float
    ) -> None:
        self.client = client
        self.name = f"{model_name}.lock"
        self.wait_s, self.lease_s = wait_s, lease_s

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block; raises RegistryError if it stays busy `wait_s`."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_s
        while not self._try_acquire(token):
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"the registry lock {self.name} stayed busy for {self.wait_s:.0f} s "
                    f"(held by {self._holder().get(self.OWNER, 'nobody now')}); try again"
                )
            time.sleep(0.05)
        try:
            yield
        finally:
            if self._holder().get(self.TOKEN) == token:
                self.client.delete_registered_model(self.name)

    def _try_acquire(self, token: str) -> bool:
        tags = {
            self.OWNER: f"{actor()}@{socket.gethostname()} pid {os.getpid()}",
            self.TOKEN: token,
            self.EXPIRES: str(time.time() + self.lease_s),
        }
        try:
            self.client.create_registered_model(
                self.name, tags=tags, description="Held while Loopline moves aliases."
            )
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
            self._break_if_expired()
            return False
        return True

    def _holder(self) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(self.name).tags)
        except MlflowException:
            return {}

    def _break_if_expired(self) -> None:
        holder = self._holder()
        if not holder or float(holder.get(self.EXPIRES, "inf")) > time.time():
            return
        if self._holder().get(self.TOKEN) == holder.get(self.TOKEN):
            logger.warning("removing the expired registry lock of %s", holder.get(self.OWNER))
            with contextlib.suppress(MlflowException):  # another waiter was quicker
                self.client.delete_registered_model(self.name)
