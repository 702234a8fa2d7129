"""The ConfigServer actor: the runtime's validated settings.

Writes (``configure``) go through the actor so they are validated and
ordered; reads take the published snapshot from a :class:`SettingsBox`
without a round trip, so settings never sit on a call's critical path.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from dspex.supervision import Actor

if TYPE_CHECKING:
    from dspex.config import Settings

__all__ = ["ConfigServer", "SettingsBox"]


class SettingsBox:
    """The current frozen :class:`~dspex.config.Settings`, swapped atomically."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        return self._settings

    def replace(self, settings: Settings) -> None:
        with self._lock:
            self._settings = settings


class ConfigServer(Actor):
    """Validates and publishes settings changes (actor thread); outlives nothing but its box."""

    def __init__(self, box: SettingsBox) -> None:
        super().__init__()
        self.box = box

    def get(self) -> Settings:
        return self.box.settings

    def configure(self, **overrides: Any) -> Settings:
        """Merge ``overrides`` (validated; raises ConfigError) and publish the result."""
        merged = self.box.settings.merged(**overrides)
        self.box.replace(merged)
        return merged
