with

source as (

    select * from {{ source('newsapp_raw', 'cdc_user_article_views') }}

),

deduplicated as (

    -- raw is idempotent to re-delivery already; this keeps staging correct where the warehouse
    -- does not enforce the key (BigQuery): the first stored delivery of a change wins.
    select
        *,
        row_number() over (
            partition by change_key
            order by ingested_at, landing_file, landing_line, change_uuid
        ) as delivery_number

    from source

),

typed as (

    select
        ---------- change
        change_key,
        change_uuid,
        case when change_type = 'UPDATE' then 'UPDATE-INSERT' else change_type end as change_type,
        is_deleted,
        cast(source_timestamp as {{ dbt.type_timestamp() }}) as changed_at,
        cast(read_timestamp as {{ dbt.type_timestamp() }}) as read_at,
        log_file,
        cast(log_position as {{ dbt.type_bigint() }}) as log_position,
        lsn,

        ---------- user x article row
        user_id,
        article_id,
        cast(view_count as {{ dbt.type_bigint() }}) as view_count,
        cast(first_viewed_at as {{ dbt.type_timestamp() }}) as first_viewed_at,
        cast(last_viewed_at as {{ dbt.type_timestamp() }}) as last_viewed_at,
        last_impression_id,

        ---------- lineage
        landing_file,
        landing_line,
        cast(ingested_at as {{ dbt.type_timestamp() }}) as ingested_at

    from deduplicated
    where delivery_number = 1

),

sequenced as (

    select
        *,
        {{ change_seq('changed_at', 'lsn', 'log_file', 'log_position', 'change_type') }} as change_seq

    from typed

)

select * from sequenced
