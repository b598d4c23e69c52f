{{ config(severity='warn', meta={"dagster": {"ref": {"name": "int_rejected_view_jumps"}}}) }}

-- A view count that jumped by more than max_views_per_change in one change was not expanded into
-- events. Warns (the rest of the build goes on); the rows say which changes to look at.

select * from {{ ref('int_rejected_view_jumps') }}
