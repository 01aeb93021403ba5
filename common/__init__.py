"""What the gateway, the workers, the export tool and the tests share: settings, the names of the
Triton models and tensors, the Redis key names. Nothing here imports the web layer or Triton."""
