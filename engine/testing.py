"""A documented path, kept so that code written against it works."""

from engine.runtime.testing import *  # noqa: F403
