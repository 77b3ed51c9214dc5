"""The end-to-end demo: a loopback server, simulated consenting devices, search, export, fine-tuning."""
