"""The chain gateway: the only service that talks to EVM chains."""
