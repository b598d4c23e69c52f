with

source as (

    select * from {{ source('newsapp_raw', 'cdc_user_article_views') }}

),

deduplicated as (

    {{ first_delivery_of_each_change('source') }}

),

typed as (

    select
        ---------- change
        {{ cdc_change_columns() | trim }},

        ---------- user x article row
        user_id,
        article_id,
        cast(view_count as {{ dbt.type_bigint() }}) as view_count,
        cast(first_viewed_at as {{ dbt.type_timestamp() }}) as first_viewed_at,
        cast(last_viewed_at as {{ dbt.type_timestamp() }}) as last_viewed_at,
        last_impression_id,

        ---------- lineage
        {{ cdc_lineage_columns() | trim }}

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
