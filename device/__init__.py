"""radarcam: roadside speed-enforcement firmware (radar -> pass -> decision -> evidence -> signed uplink)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("radarcam")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+src"
