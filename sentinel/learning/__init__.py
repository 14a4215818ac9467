"""Training the learned detector's models (`sentinel train`, docs/learning.md)."""
