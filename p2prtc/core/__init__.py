"""Sans-IO core: document model, sync protocol, framing, codes and keys. No asyncio, no sockets."""
