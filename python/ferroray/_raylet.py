"""Where Ray programs import the generator types from (``ray._raylet``)."""

from ferroray import DynamicObjectRefGenerator, ObjectRefGenerator
from ferroray._ferroray import ObjectRef

__all__ = ["ObjectRef", "ObjectRefGenerator", "DynamicObjectRefGenerator"]
