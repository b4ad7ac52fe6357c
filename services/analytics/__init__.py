"""Analytics: figures over every domain's tables (journeys, messaging, orders), read by
marketers and ops. A feature that spans domains, so it reads their tables and calls their
public modules, and owns no table of its own but its rollups."""
