"""The client API: the actor system handle and the functions that talk to agents by name."""
