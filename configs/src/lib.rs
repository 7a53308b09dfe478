//! Typed, validated ironmesh configuration.
