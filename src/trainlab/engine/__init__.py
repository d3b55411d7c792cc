"""The training engine: trainer loop, callbacks, checkpoints, seeding, devices."""
