"""Runnable user stories, each a script; importable too, so the benchmarks reuse their models."""
