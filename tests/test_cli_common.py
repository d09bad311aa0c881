"""Shared CLI plumbing: -v shows INFO logs even after `dfstream` configured logging; errors are one line."""
import logging

import pytest

from dfstream.cli.common import one_line_error, user_errors, verbose_logging


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    root.setLevel(level)
    root.handlers[:] = handlers


def test_verbose_shows_info_logs_after_the_top_level_command_configured_warning(root_logging):
    logging.basicConfig(level=logging.WARNING, force=True)  # what `dfstream --log-level warning` did
    verbose_logging(True)
    assert root_logging.getEffectiveLevel() == logging.INFO
    root_logging.setLevel(logging.DEBUG)  # `dfstream --log-level debug`: no -v leaves it alone
    verbose_logging(False)
    assert root_logging.getEffectiveLevel() == logging.DEBUG


def test_a_user_error_becomes_its_first_line_and_a_bug_is_not_a_user_error():
    assert one_line_error(ValueError("bad clip: x.mp4\n  Traceback...")).message == "bad clip: x.mp4"
    assert one_line_error(ValueError("")).message == "ValueError"
    assert issubclass(FileNotFoundError, user_errors()) and not issubclass(KeyError, user_errors())
