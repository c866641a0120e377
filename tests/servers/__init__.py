"""Loopback protocol servers (S3, GCS, B2) and a fault-injecting proxy for tests."""
