-- Tool versions record their fallbacks (docs/admin.md, "Tool history"), so that a rollback
-- restores them and a diff shows them. Keep in step with ../postgres/0011_tool_version_fallbacks.sql.
-- A JSON array like global_tools.fallbacks; NULL for a version recorded before this migration,
-- whose fallbacks nobody wrote down: a rollback to it keeps the tool's current list.
ALTER TABLE tool_versions ADD COLUMN fallbacks TEXT;

-- A tool's newest version is its current state, so its fallbacks are known.
UPDATE tool_versions SET fallbacks = (
    SELECT g.fallbacks FROM global_tools g WHERE g.slug = tool_versions.slug AND g.version = tool_versions.version
);
