{{
    config(
        partition_by=(
            {'field': 'shown_at', 'data_type': 'timestamp', 'granularity': 'day'}
            if target.type == 'bigquery' else none
        ),
        cluster_by=(['impression_id'] if target.type == 'bigquery' else none),
    )
}}

-- Real impressions for training: one row per article shown in a served list, labelled with
-- whether the user clicked it, split by time: the last `validation_hours` (default 24) before
-- as_of are `validation`, everything before is `train`.

with

impressions as (

    select * from {{ ref('int_impressions') }}

),

validation_window as (

    select
        as_of,
        {{ hours_before('as_of', var('validation_hours')) }} as validation_start

    from {{ ref('int_as_of') }}

),

final as (

    select
        impressions.impression_id,
        impressions.position,
        impressions.user_id,
        impressions.article_id,
        impressions.shown_at,
        impressions.clicked,
        impressions.first_clicked_at,
        case
            when impressions.shown_at >= validation_window.validation_start then 'validation'
            else 'train'
        end as split,
        validation_window.as_of

    from impressions
    cross join validation_window

)

select * from final
