"""Detection backends and plate reading (see README.md here); imports nothing on its own."""
