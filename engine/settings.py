"""A documented path, kept so that code written against it works."""

from engine.runtime.settings import *  # noqa: F403
