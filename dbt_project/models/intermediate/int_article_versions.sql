-- Every state an article has been in, in the order the CMS applied the changes.
-- UPDATE-DELETE rows are before-images of an update, not states of their own.

with

changes as (

    select * from {{ ref('stg_newsapp__articles') }}
    where change_type in ('INSERT', 'UPDATE-INSERT', 'DELETE')

),

versioned as (

    select
        change_key,
        change_seq,
        change_type,
        is_deleted,
        changed_at,
        article_id,
        title,
        body,
        category,
        subcategory,
        url,
        status,
        published_at,
        updated_at,

        row_number() over (
            partition by article_id
            order by change_seq
        ) as version_number,

        lead(changed_at) over (
            partition by article_id
            order by change_seq
        ) as superseded_at,

        row_number() over (
            partition by article_id
            order by change_seq desc
        ) as reverse_version_number

    from changes

),

final as (

    select
        change_key,
        change_seq,
        change_type,
        is_deleted,
        article_id,
        version_number,
        changed_at as valid_from,
        superseded_at as valid_to,
        reverse_version_number = 1 as is_latest_version,
        title,
        body,
        category,
        subcategory,
        url,
        status,
        published_at,
        updated_at

    from versioned

)

select * from final
