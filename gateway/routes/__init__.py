"""HTTP endpoints, one module per API document; each exposes `routes: web.RouteTableDef`,
listed in gateway.app.ROUTE_TABLES."""
