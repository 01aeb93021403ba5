"""HTTP endpoints; each module exposes `routes: web.RouteTableDef`, registered by gateway.app."""
