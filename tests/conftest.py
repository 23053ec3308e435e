import os

# TensorFlow's start-up chatter is noise in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
