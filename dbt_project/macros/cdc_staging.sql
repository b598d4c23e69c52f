{#- Shared by the staging models: one row per distinct change, with typed change metadata. -#}

{% macro first_delivery_of_each_change(relation) %}
    -- raw is idempotent to re-delivery already; this keeps staging correct where the warehouse
    -- does not enforce the key (BigQuery): the first stored delivery of a change wins.
    select
        *,
        row_number() over (
            partition by change_key
            order by ingested_at, landing_file, landing_line, change_uuid
        ) as delivery_number

    from {{ relation }}
{% endmacro %}


{% macro cdc_change_columns() %}
        change_key,
        change_uuid,
        case when change_type = 'UPDATE' then 'UPDATE-INSERT' else change_type end as change_type,
        is_deleted,
        cast(source_timestamp as {{ dbt.type_timestamp() }}) as changed_at,
        cast(read_timestamp as {{ dbt.type_timestamp() }}) as read_at,
        log_file,
        cast(log_position as {{ dbt.type_bigint() }}) as log_position,
        lsn
{% endmacro %}


{% macro cdc_lineage_columns() %}
        landing_file,
        landing_line,
        cast(ingested_at as {{ dbt.type_timestamp() }}) as ingested_at
{% endmacro %}
