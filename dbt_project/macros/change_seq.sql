{#
  A sortable text key that orders CDC changes the way the source applied them:
  source timestamp (microseconds since the epoch, zero-padded), then the log position -
  `lsn` (PostgreSQL) or `log_file` + `log_position` (MySQL binlog, position zero-padded) -
  and last the row image: an update's UPDATE-DELETE (row before) shares the log position of
  its UPDATE-INSERT (row after) and sorts first ('0' before '1').
  An LSN is two hexadecimal 32-bit halves (`16/B374D848`); each half is upper-cased and
  zero-padded to 8 digits (macro lsn_sort_key), so comparing the text compares the numbers
  (`9/0` before `16/0`). Ingestion quarantines any other LSN form.
  Parts are joined by a space, which sorts below every character a timestamp, LSN or binlog
  file name contains, so comparing two keys as text equals comparing the tuples
  (source_timestamp, lsn, log_file, log_position, image) - the order that
  newsrec_assets.domain.cdc.source_order uses. Unique per table, like change_key.
#}
{% macro change_seq(source_timestamp, lsn, log_file, log_position, change_type) -%}
    {%- set epoch = "cast('1970-01-01 00:00:00' as " ~ dbt.type_timestamp() ~ ")" -%}
    {{ dbt.concat([
        "lpad(cast(" ~ dbt.datediff(epoch, source_timestamp, 'microsecond') ~ " as " ~ dbt.type_string() ~ "), 20, '0')",
        "' '",
        "coalesce(" ~ lsn_sort_key(lsn) ~ ", '')",
        "' '",
        "coalesce(" ~ log_file ~ ", '')",
        "' '",
        "lpad(cast(coalesce(" ~ log_position ~ ", 0) as " ~ dbt.type_string() ~ "), 20, '0')",
        "' '",
        "case when " ~ change_type ~ " = 'UPDATE-DELETE' then '0' else '1' end",
    ]) }}
{%- endmacro %}


{#- `16/B374D848` -> `00000016/B374D848`: text order equals the LSNs' numeric order. -#}
{% macro lsn_sort_key(lsn) -%}
    {{ dbt.concat([
        "lpad(upper(" ~ dbt.split_part(lsn, "'/'", 1) ~ "), 8, '0')",
        "'/'",
        "lpad(upper(" ~ dbt.split_part(lsn, "'/'", 2) ~ "), 8, '0')",
    ]) }}
{%- endmacro %}
