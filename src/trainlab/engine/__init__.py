"""The training engine: trainer loop, callbacks, checkpoints and the durable writer."""
