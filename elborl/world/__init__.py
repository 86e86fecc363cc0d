"""The embedded "shapes" world: spec, prompt generator and renderer (docs/ARCHITECTURE.md section 4)."""

from elborl.world.spec import COLORS, WorldSpec

__all__ = ["COLORS", "WorldSpec"]
