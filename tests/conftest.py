import os

# TensorFlow's start-up chatter is noise in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Retries back off for milliseconds, not seconds, so that refused connections fail fast.
os.environ.setdefault("TFCHIPS_RETRY_BACKOFF", "0.01")
