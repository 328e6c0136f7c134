"""jepsen-lite: run real meshraft clusters under real faults and check linearizability."""

__version__ = "0.1.0"
