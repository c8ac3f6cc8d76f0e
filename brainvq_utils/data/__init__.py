"""The data layer (moving into one module per concern; the names below stay importable from here)."""

from .layouts import *  # noqa: F401,F403
from .layouts import __doc__ as _layouts_doc  # noqa: F401
