"""What the coordinator and the client nodes truly share: wire vocabulary, settings, hashing."""
