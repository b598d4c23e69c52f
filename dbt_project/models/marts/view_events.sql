{{
    config(
        materialized='incremental',
        unique_key='event_id',
        incremental_strategy=('merge' if target.type == 'bigquery' else 'delete+insert'),
        partition_by=(
            {'field': 'viewed_at', 'data_type': 'timestamp', 'granularity': 'day'}
            if target.type == 'bigquery' else none
        ),
        cluster_by=(['user_id', 'article_id'] if target.type == 'bigquery' else none),
    )
}}

-- depends_on: {{ ref('stg_newsapp__user_article_views') }}
-- Every article-view event: reconstructed from the in-place-updated behaviour table, and the views
-- posted to the API. Incremental: a build rebuilds the app events of the (user, article) rows that
-- have a view-recording change not yet behind any stored event (a view's number depends on every
-- earlier version of its row, so such a row's events are rebuilt whole), adds the API events not
-- stored yet (each stands alone), and merges them by event_id.

with

events as (

    select * from {{ ref('int_view_events') }}

),

{% if is_incremental() %}
changed_rows as (

    select distinct
        changes.user_id,
        changes.article_id

    from {{ ref('stg_newsapp__user_article_views') }} as changes
    where changes.change_type in ('INSERT', 'UPDATE-INSERT')
        and not exists (
            select 1 from {{ this }} as stored
            where stored.change_key = changes.change_key
        )

),

{% endif %}
final as (

    select
        events.event_id,
        events.user_id,
        events.article_id,
        events.view_number,
        events.viewed_at,
        events.impression_id,
        events.recorded_at,
        events.change_key

    from events
    {% if is_incremental() %}
    inner join changed_rows
        on changed_rows.user_id = events.user_id
        and changed_rows.article_id = events.article_id
    where events.event_source = 'app'
    {% endif %}

    {% if is_incremental() %}
    union all

    select
        events.event_id,
        events.user_id,
        events.article_id,
        events.view_number,
        events.viewed_at,
        events.impression_id,
        events.recorded_at,
        events.change_key

    from events
    where events.event_source = 'api'
        and not exists (
            select 1 from {{ this }} as stored
            where stored.change_key = events.change_key
        )
    {% endif %}

)

select * from final
