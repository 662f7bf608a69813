"""A documented path, kept so that code written against it works."""

from engine.domain.errors import *  # noqa: F403
