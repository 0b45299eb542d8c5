"""The engine's runner contract on MLX: Metal on Apple Silicon, MLX's CPU backend on Linux (tests, CI)."""
