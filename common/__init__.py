"""What the coordinator and the client nodes truly share: the wire protocol (shapes, states,
version), site names, the engine-option allow-lists, and the settings loader."""
