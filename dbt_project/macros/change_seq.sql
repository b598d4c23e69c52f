{#
  A sortable text key that orders CDC changes the way the source applied them:
  source timestamp (microseconds since the epoch, zero-padded), then the log position -
  `lsn` (PostgreSQL) or `log_file` + `log_position` (MySQL binlog, position zero-padded) -
  and last the row image: an update's UPDATE-DELETE (row before) shares the log position of
  its UPDATE-INSERT (row after) and sorts first ('0' before '1').
  Parts are joined by a space, which sorts below every character a timestamp, LSN or binlog
  file name contains, so comparing two keys as text equals comparing the tuples
  (source_timestamp, lsn, log_file, log_position, image) - the order that
  newsrec_assets.domain.events uses. Unique per table, like change_key.
#}
{% macro change_seq(source_timestamp, lsn, log_file, log_position, change_type) -%}
    {%- set epoch = "cast('1970-01-01 00:00:00' as " ~ dbt.type_timestamp() ~ ")" -%}
    {{ dbt.concat([
        "lpad(cast(" ~ dbt.datediff(epoch, source_timestamp, 'microsecond') ~ " as " ~ dbt.type_string() ~ "), 20, '0')",
        "' '",
        "coalesce(" ~ lsn ~ ", '')",
        "' '",
        "coalesce(" ~ log_file ~ ", '')",
        "' '",
        "lpad(cast(coalesce(" ~ log_position ~ ", 0) as " ~ dbt.type_string() ~ "), 20, '0')",
        "' '",
        "case when " ~ change_type ~ " = 'UPDATE-DELETE' then '0' else '1' end",
    ]) }}
{%- endmacro %}
