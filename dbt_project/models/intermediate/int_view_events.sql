-- One row per view event, reconstructed from consecutive versions of a user_article_views row.
-- The app overwrites the row on every view, so a version records
-- `view_count - (highest view_count of the earlier versions)` views; usually one, more when the
-- app coalesced writes (a jump), none for a version that changed nothing else (or went back,
-- e.g. a re-insert after a DELETE). Each recorded view becomes an event with its own
-- view_number. Order is change_seq (source order), never arrival order, and staging has removed
-- re-deliveries. Reference: newsrec_assets.domain.events.reconstruct_view_events.

with

versions as (

    select
        change_key,
        change_seq,
        changed_at,
        user_id,
        article_id,
        view_count,
        last_viewed_at,
        last_impression_id

    from {{ ref('stg_newsapp__user_article_views') }}
    -- UPDATE-DELETE is the row before an update; DELETE removes the row: neither records a view.
    where change_type in ('INSERT', 'UPDATE-INSERT')

),

with_previous_count as (

    select
        *,
        coalesce(
            max(view_count) over (
                partition by user_id, article_id
                order by change_seq
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as previous_view_count

    from versions

),

recording_versions as (

    select
        *,
        view_count - previous_view_count as views_recorded

    from with_previous_count
    where view_count > previous_view_count

),

single_views as (

    select
        recording_versions.*,
        view_count as view_number

    from recording_versions
    where views_recorded = 1

),

coalesced_views as (

    -- Only the rare jumps meet the number table, so the common case stays a plain scan.
    select
        recording_versions.*,
        previous_view_count + integers.n as view_number

    from recording_versions
    inner join {{ generate_integers(var('max_views_per_change')) }}
        on integers.n <= recording_versions.views_recorded
    where recording_versions.views_recorded > 1

),

events as (

    select * from single_views
    union all
    select * from coalesced_views

),

final as (

    select
        {{ dbt.concat([
            'user_id', "'|'", 'article_id', "'|'",
            'cast(view_number as ' ~ dbt.type_string() ~ ')',
        ]) }} as event_id,
        user_id,
        article_id,
        view_number,
        last_viewed_at as viewed_at,
        last_impression_id as impression_id,
        views_recorded as views_in_change,
        change_key,
        change_seq,
        changed_at as recorded_at

    from events

)

select * from final
