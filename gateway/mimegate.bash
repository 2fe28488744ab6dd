# bash completion for mimegate(1): the commands, their options and what each option takes
_mimegate()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion || return
    else
        cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
    fi
    local commands="filter inspect convert keys serve scan"
    if [ "$cword" -eq 1 ]; then
        COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
        return
    fi
    case $prev in
        -c | --config | -o | --output)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        --to)
            COMPREPLY=($(compgen -W "keep plain pgp-mime pgp-inline smime" -- "$cur"))
            return ;;
        --sign-method)
            COMPREPLY=($(compgen -W "auto pgp pgp-inline smime" -- "$cur"))
            return ;;
        --header-protection)
            COMPREPLY=($(compgen -W "off sign-only obscure" -- "$cur"))
            return ;;
        -f | --from | -r | --recipient | --sign | --queue-id | --expiring)
            return ;;
    esac
    local opts
    case ${words[1]} in
        filter) opts="-c --config --stdout -f --from --queue-id" ;;
        inspect) opts="--json -c --config" ;;
        convert) opts="-c --config --to -r --recipient -o --output --sign --sign-method --aes-gcm --header-protection" ;;
        keys) opts="-c --config --json --index --expiring" ;;
        serve) opts="-c --config --check" ;;
        scan) opts="-c --config --json --no-progress" ;;
        *) return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts -h --help --version" -- "$cur"))
    elif [[ ${words[1]} == inspect || ${words[1]} == scan || ${words[1]} == convert ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -F _mimegate mimegate
