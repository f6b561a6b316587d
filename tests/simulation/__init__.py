"""The protocol simulation: issue 11's fault harness (see the README, Reliability)."""
