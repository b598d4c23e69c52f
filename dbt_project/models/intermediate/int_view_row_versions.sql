-- Every version of a user_article_views row, with what it recorded. The app overwrites the row on
-- every view, so a version records `view_count - baseline_count` views: the count above what the
-- row's life had already reached. A DELETE ends a life; the re-inserted row starts again from its
-- own count, and view numbers continue after the earlier lives' views (views_before_life).
-- A spike (more than max_views_per_change above every earlier version of the life) is rejected
-- and does not raise the baseline; a version still recording more than max_views_per_change views
-- over the baseline is rejected but does raise it. Rejected versions make no events and are listed
-- in int_rejected_view_jumps. Order is change_seq (source order), never arrival order.
-- Reference: newsrec_assets.domain.events.view_row_versions.

with

changes as (

    select
        change_key,
        change_seq,
        change_type,
        changed_at,
        user_id,
        article_id,
        view_count,
        last_viewed_at,
        last_impression_id

    from {{ ref('stg_newsapp__user_article_views') }}
    -- UPDATE-DELETE is the row before an update, not a version of its own.
    where change_type in ('INSERT', 'UPDATE-INSERT', 'DELETE')

),

with_life as (

    select
        *,
        cast(1 + coalesce(
            sum(case when change_type = 'DELETE' then 1 else 0 end) over (
                partition by user_id, article_id
                order by change_seq
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as {{ dbt.type_bigint() }}) as row_life

    from changes

),

versions as (

    select * from with_life
    where change_type != 'DELETE'

),

with_highest_earlier_count as (

    select
        *,
        coalesce(
            max(view_count) over (
                partition by user_id, article_id, row_life
                order by change_seq
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as highest_earlier_count

    from versions

),

with_spikes as (

    select
        *,
        view_count - highest_earlier_count > {{ var('max_views_per_change') }} as is_spike

    from with_highest_earlier_count

),

with_baseline as (

    select
        *,
        coalesce(
            max(case when not is_spike then view_count end) over (
                partition by user_id, article_id, row_life
                order by change_seq
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as baseline_count

    from with_spikes

),

lives as (

    select
        user_id,
        article_id,
        row_life,
        coalesce(max(case when not is_spike then view_count end), 0) as life_views

    from with_baseline
    group by user_id, article_id, row_life

),

life_offsets as (

    select
        user_id,
        article_id,
        row_life,
        cast(coalesce(
            sum(life_views) over (
                partition by user_id, article_id
                order by row_life
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as {{ dbt.type_bigint() }}) as views_before_life

    from lives

),

final as (

    select
        with_baseline.change_key,
        with_baseline.change_seq,
        with_baseline.change_type,
        with_baseline.changed_at,
        with_baseline.user_id,
        with_baseline.article_id,
        with_baseline.row_life,
        with_baseline.view_count,
        with_baseline.baseline_count,
        with_baseline.view_count - with_baseline.baseline_count as views_claimed,
        life_offsets.views_before_life,
        case
            when with_baseline.view_count - with_baseline.baseline_count > {{ var('max_views_per_change') }}
                then 'rejected_jump'
            when with_baseline.view_count > with_baseline.baseline_count then 'recorded'
            else 'no_new_views'
        end as version_status,
        with_baseline.last_viewed_at,
        with_baseline.last_impression_id

    from with_baseline
    inner join life_offsets
        on with_baseline.user_id = life_offsets.user_id
        and with_baseline.article_id = life_offsets.article_id
        and with_baseline.row_life = life_offsets.row_life

)

select * from final
