with

source as (

    select * from {{ source('newsapp_raw', 'cdc_api_view_events') }}

),

deduplicated as (

    {{ first_delivery_of_each_change('source') }}

),

typed as (

    select
        ---------- change
        {{ cdc_change_columns() | trim }},

        ---------- view
        event_id,
        user_id,
        article_id,
        cast(viewed_at as {{ dbt.type_timestamp() }}) as viewed_at,
        impression_id,

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
