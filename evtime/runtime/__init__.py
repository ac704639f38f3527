"""The worker: partition tasks, drivers for local and Kafka sources, checkpoints."""
