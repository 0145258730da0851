"""Training: the loop (`trainer`), and each of its concerns in its own unit: device and precision
(`precision`), learning-rate schedule (`schedule`), losses, checkpoints and resume, signals,
distributed set-up, config files -> trainer (`config`)."""
